/* Prints a line, then traps (unreachable): the executor must keep the line. */
#include <stdio.h>

int main(void) {
    puts("before the trap");
    fflush(stdout);
    __builtin_trap();
}
