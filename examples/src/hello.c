/* Minimal CGI module (also the benchmark module). */
#include <stdio.h>

int main(void)
{
    fputs("Content-Type: text/plain\r\n\r\nHello from WebAssembly!\n", stdout);
    return 0;
}
