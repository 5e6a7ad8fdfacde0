/* Prints argv, one "argv[i]=..." line each, then the environment in the order given. */
#include <stdio.h>

extern char **environ;

int main(int argc, char **argv) {
    for (int i = 0; i < argc; i++) printf("argv[%d]=%s\n", i, argv[i]);
    for (char **e = environ; *e; e++) puts(*e);
    return 0;
}
