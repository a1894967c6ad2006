/* CGI: dump argv and the environment (the CGI variables) as text/plain. */
#include <stdio.h>

extern char **environ;

int main(int argc, char **argv)
{
    fputs("Content-Type: text/plain\r\n\r\n", stdout);
    for (int i = 0; i < argc; i++)
        printf("argv[%d]=%s\n", i, argv[i]);
    for (char **e = environ; e && *e; e++) {
        fputs(*e, stdout);
        fputc('\n', stdout);
    }
    return 0;
}
