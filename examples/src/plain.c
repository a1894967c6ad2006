/* Non-CGI demo: stdout is sent as the response body as-is. */
#include <stdio.h>

int main(void)
{
    fputs("plain output, no CGI headers\n", stdout);
    return 0;
}
