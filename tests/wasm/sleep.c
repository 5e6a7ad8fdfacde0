/* sleep SECONDS: blocks in WASI poll_oneoff, then says it woke. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv) {
    puts("sleeping");
    fflush(stdout);
    sleep(argc > 1 ? atoi(argv[1]) : 60);
    puts("woke");
    return 0;
}
