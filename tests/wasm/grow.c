/* grow MIB: allocates and touches MIB mebibytes, one at a time; reports where allocation fails (exit 5). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *volatile keep; /* volatile: the compiler may not drop the allocations */

int main(int argc, char **argv) {
    int want = argc > 1 ? atoi(argv[1]) : 64;
    for (int i = 0; i < want; i++) {
        char *p = malloc(1 << 20);
        if (!p) {
            printf("allocation failed after %d MiB\n", i);
            return 5;
        }
        memset(p, i, 1 << 20);
        keep = p;
    }
    printf("allocated %d MiB\n", want);
    return 0;
}
