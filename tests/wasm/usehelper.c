/* Imports mul from the import module "helper" and prints 6 * 7. */
#include <stdio.h>

__attribute__((import_module("helper"), import_name("mul"))) int mul(int a, int b);

int main(void) {
    printf("6 * 7 = %d\n", mul(6, 7));
    return 0;
}
