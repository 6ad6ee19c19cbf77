/* Loaded into tritonserver with LD_PRELOAD by s2serve (serve/argv_secret.py). Triton takes the
   admin key only on its command line, which every local user can read in /proc/PID/cmdline. So
   s2serve passes a placeholder there and this constructor, which runs before main, points the
   argument at a copy with the placeholder replaced by the key read from a file that only the
   server's user can read. /proc/PID/cmdline shows the argument strings the kernel copied at exec,
   which are left alone: it keeps showing the placeholder. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PLACEHOLDER "@S2TRT_SECRET@"
#define FILE_ENV "S2TRT_SECRET_FILE"
#define MAX_SECRET 1024

static void fail(char const* what, char const* path)
{
    fprintf(stderr, "s2trt argv_secret: %s %s\n", what, path);
    _exit(111);
}

/* glibc hands (argc, argv, envp) to the constructors of preloaded libraries; argv is main's array. */
__attribute__((constructor)) static void s2trtSubstituteSecret(int argc, char** argv, char** envp)
{
    (void) envp;
    char const* path = getenv(FILE_ENV);
    if (path == NULL)
    {
        return; /* the model processes tritonserver starts inherit LD_PRELOAD, not the file */
    }
    char secret[MAX_SECRET + 1];
    FILE* f = fopen(path, "rb");
    if (f == NULL)
    {
        fail("cannot open", path);
    }
    size_t const n = fread(secret, 1, sizeof secret, f);
    fclose(f);
    if (n == 0 || n > MAX_SECRET)
    {
        fail("empty or too long:", path);
    }
    secret[n] = '\0';
    size_t const mark = strlen(PLACEHOLDER);
    for (int i = 0; i < argc; ++i)
    {
        char const* at = strstr(argv[i], PLACEHOLDER);
        if (at == NULL)
        {
            continue;
        }
        size_t const head = (size_t) (at - argv[i]);
        size_t const tail = strlen(at + mark);
        char* arg = malloc(head + n + tail + 1);
        if (arg == NULL)
        {
            fail("out of memory for", path);
        }
        memcpy(arg, argv[i], head);
        memcpy(arg + head, secret, n);
        memcpy(arg + head + n, at + mark, tail + 1);
        argv[i] = arg;
    }
    unsetenv(FILE_ENV);
}
