/* Test module: trap (wasm `unreachable`) immediately, printing nothing. */
int main(void)
{
    __builtin_trap();
}
