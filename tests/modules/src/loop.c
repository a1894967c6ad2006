/* Test module: spin forever without printing (for timeout handling). */
int main(void)
{
    volatile unsigned long counter = 0;
    for (;;)
        counter++;
}
