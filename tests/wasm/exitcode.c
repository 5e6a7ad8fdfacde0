/* Exits with the code in $EXIT_CODE (0 when unset), through proc_exit. */
#include <stdio.h>
#include <stdlib.h>

int main(void) {
    const char *v = getenv("EXIT_CODE");
    int code = v ? atoi(v) : 0;
    fprintf(stderr, "exiting with %d\n", code);
    exit(code);
}
