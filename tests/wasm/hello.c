/* Prints a greeting: the smallest WASI command. */
#include <stdio.h>

int main(void) {
    puts("Hello, world!");
    return 0;
}
