/* Test module: show the filesystem sandbox.  Reports, one line each, whether
 * the requested path (QUERY_STRING, else argv[1]), "/etc/passwd" and
 * "../../etc/passwd" can be opened; then prints the requested file's contents. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static FILE *try_open(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f)
        printf("%s: opened\n", path);
    else
        printf("%s: denied (%s)\n", path, strerror(errno));
    return f;
}

int main(int argc, char **argv)
{
    const char *path = getenv("QUERY_STRING");
    if ((!path || !*path) && argc > 1)
        path = argv[1];

    fputs("Content-Type: text/plain\r\n\r\n", stdout);
    FILE *req = (path && *path) ? try_open(path) : NULL;
    const char *probes[] = {"/etc/passwd", "../../etc/passwd"};
    for (size_t i = 0; i < sizeof probes / sizeof probes[0]; i++) {
        FILE *f = try_open(probes[i]);
        if (f)
            fclose(f);
    }
    if (req) {
        fputs("\n", stdout);
        char buf[4096];
        size_t n;
        while ((n = fread(buf, 1, sizeof buf, req)) > 0)
            fwrite(buf, 1, n, stdout);
        fclose(req);
    }
    return 0;
}
