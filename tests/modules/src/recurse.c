/* Test module: unbounded, non-tail recursion -> stack overflow trap. */
#include <stdio.h>

static unsigned long depth_limit = ~0UL; /* never reached */

__attribute__((noinline)) static unsigned long down(unsigned long depth)
{
    volatile char frame[256];
    frame[depth % sizeof frame] = (char)depth;
    if (depth == depth_limit)
        return 0;
    unsigned long r = down(depth + 1);
    return r + frame[(depth * 7) % sizeof frame];
}

int main(void)
{
    unsigned long r = down(0);
    printf("Content-Type: text/plain\r\n\r\nsurvived %lu\n", r);
    return 0;
}
