/* Says so, then loops forever: only an interrupt stops it. */
#include <stdio.h>

int main(void) {
    puts("looping");
    fflush(stdout);
    volatile unsigned long n = 0; /* volatile: the loop has a side effect, so it is not removed */
    for (;;) n++;
}
