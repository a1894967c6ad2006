/* Test module: allocate and touch 1 MiB blocks until malloc fails, then
 * abort() (a trap).  The server caps linear memory, so this must trap. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void)
{
    for (int i = 0; i < 4096; i++) {
        char *p = malloc(1 << 20);
        if (!p)
            abort();
        memset(p, i & 0xff, 1 << 20);
        /* keep the block reachable so the stores cannot be elided */
        __asm__ volatile("" : : "r"(p) : "memory");
    }
    fputs("Content-Type: text/plain\r\n\r\nsurvived\n", stdout);
    return 0;
}
