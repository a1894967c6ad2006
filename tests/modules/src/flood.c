/* Test module: writes endlessly, CGI headers first, to stdout (or to stderr with
 * QUERY_STRING=stderr); for the output limits enforced while a guest runs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void)
{
    const char *q = getenv("QUERY_STRING");
    FILE *out = (q && !strcmp(q, "stderr")) ? stderr : stdout;
    static char chunk[65536];
    memset(chunk, 'x', sizeof chunk);
    fputs("Content-Type: text/plain\r\n\r\n", stdout);
    for (;;)
        fwrite(chunk, 1, sizeof chunk, out);
}
