/* Test module: CGI header edge cases, selected by QUERY_STRING. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void out(const char *s) { fputs(s, stdout); }

int main(void)
{
    const char *q = getenv("QUERY_STRING");
    if (!q)
        q = "";

    if (!strcmp(q, "status")) {
        out("Status: 201 Created\r\nContent-Type: text/plain\r\n\r\ncreated\n");
    } else if (!strcmp(q, "redirect")) {
        out("Location: http://example.com/elsewhere\r\n\r\n");
    } else if (!strcmp(q, "local-redirect")) {
        out("Location: /hello\r\n\r\n");
    } else if (!strcmp(q, "cookies")) {
        out("Content-Type: text/plain\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\ncookies\n");
    } else if (!strcmp(q, "lf")) {
        out("Content-Type: text/plain\nX-Lf: yes\n\nlf body\n");
    } else if (!strcmp(q, "binary")) {
        out("Content-Type: application/octet-stream\r\n\r\n");
        unsigned char b[512];
        for (int i = 0; i < 512; i++)
            b[i] = (unsigned char)i;
        fwrite(b, 1, sizeof b, stdout);
    } else if (!strcmp(q, "garbage")) {
        static const char g[] = "this is not a CGI header block\x00\x01";
        fwrite(g, 1, sizeof g - 1, stdout); /* includes the NUL and \x01 */
    } else if (!strcmp(q, "empty")) {
        /* nothing at all */
    } else if (!strcmp(q, "exit3")) {
        exit(3);
    } else if (!strcmp(q, "exit3-out")) {
        out("Content-Type: text/plain\r\n\r\npartial\n");
        fflush(stdout);
        exit(3);
    } else if (!strcmp(q, "stderr")) {
        fputs("guest says hello on stderr\n", stderr);
        out("Content-Type: text/plain\r\n\r\nok\n");
    } else if (!strcmp(q, "badstatus")) {
        out("Status: abc\r\n\r\n");
    } else if (!strcmp(q, "inject")) {
        out("Content-Type: text/plain\r\nX-Bad: a\rInjected: yes\r\n\r\nx");
    } else if (!strcmp(q, "big")) {
        out("Content-Type: text/plain\r\n\r\n");
        static char chunk[65536];
        memset(chunk, 'x', sizeof chunk);
        for (int i = 0; i < (4 << 20) / (int)sizeof chunk; i++)
            fwrite(chunk, 1, sizeof chunk, stdout);
    } else {
        out("Content-Type: text/plain\r\n\r\nheaders default\n");
    }
    return 0;
}
