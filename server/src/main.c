/* main: replaced by the real entry point below. */
int main(void);
int main(void)
{
    return 0;
}
