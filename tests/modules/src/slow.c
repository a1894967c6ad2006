/* Sleeps for the number of milliseconds in QUERY_STRING (default 1000), then answers.
 * Used to keep a worker busy while a test watches the pool and the scoreboard. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int main(void) {
    const char *q = getenv("QUERY_STRING");
    long ms = (q && *q) ? atol(q) : 1000;
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
    printf("Content-Type: text/plain\r\n\r\nslept %ld ms\n", ms);
    return 0;
}
