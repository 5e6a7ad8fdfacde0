/* write PATH TEXT: writes TEXT and a newline to PATH (e.g. /outputs/result.txt). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc != 3) {
        fputs("usage: write PATH TEXT\n", stderr);
        return 2;
    }
    FILE *f = fopen(argv[1], "w");
    if (!f) {
        fprintf(stderr, "write: %s: %s\n", argv[1], strerror(errno));
        return 1;
    }
    fprintf(f, "%s\n", argv[2]);
    fclose(f);
    printf("wrote %s\n", argv[1]);
    return 0;
}
