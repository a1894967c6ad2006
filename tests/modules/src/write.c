/* Test module: tries to create the file named by QUERY_STRING and write to it; reports
 * "wrote PATH" or "cannot write PATH: reason" (text/plain, 200 either way). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void) {
    const char *path = getenv("QUERY_STRING");
    printf("Content-Type: text/plain\r\n\r\n");
    if (!path || !*path) {
        printf("no path given\n");
        return 0;
    }
    FILE *f = fopen(path, "w");
    if (!f) {
        printf("cannot write %s: %s\n", path, strerror(errno));
        return 0;
    }
    fputs("written by the guest\n", f);
    fclose(f);
    printf("wrote %s\n", path);
    return 0;
}
