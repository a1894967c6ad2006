/* CGI: print the file named by QUERY_STRING (or argv[1]) as text/plain.
 * Only paths inside a preopened (mapped) directory can be opened. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    const char *path = getenv("QUERY_STRING");
    if ((!path || !*path) && argc > 1)
        path = argv[1];
    if (!path)
        path = "";
    FILE *f = fopen(path, "rb");
    if (!f) {
        printf("Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\n"
               "cannot open %s: %s\n", path, strerror(errno));
        return 0;
    }
    fputs("Content-Type: text/plain\r\n\r\n", stdout);
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0)
        fwrite(buf, 1, n, stdout);
    fclose(f);
    return 0;
}
