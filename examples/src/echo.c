/* CGI: echo the request body (read until EOF) back, binary safe. */
#include <stdio.h>
#include <stdlib.h>

int main(void)
{
    size_t len = 0, cap = 65536;
    char *buf = malloc(cap);
    if (!buf)
        return 1;
    for (;;) {
        if (len == cap) {
            char *bigger = realloc(buf, cap * 2);
            if (!bigger)
                return 1;
            buf = bigger;
            cap *= 2;
        }
        size_t n = fread(buf + len, 1, cap - len, stdin);
        if (n == 0)
            break;
        len += n;
    }
    const char *type = getenv("CONTENT_TYPE");
    if (!type || !*type)
        type = "application/octet-stream";
    printf("Content-Type: %s\r\nX-Body-Length: %zu\r\n\r\n", type, len);
    fwrite(buf, 1, len, stdout);
    return 0;
}
