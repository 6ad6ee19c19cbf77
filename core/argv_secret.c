/* Preloaded (LD_PRELOAD) by s2trt into a program that takes a secret only on its command line, which
   every local user can read in /proc/PID/cmdline: tritonserver's admin key (s2serve), a stream URL
   with its credentials for gst-launch-1.0 (s2infer --decoder sw|nv). See core/argv_secret.py. The
   command line holds a placeholder instead, and this constructor, which runs before main, points
   each argument that holds it at a copy with the placeholder replaced by the secret, read from the
   file $S2TRT_SECRET_FILE names: one only the program's user can read, or a pipe it inherited
   (/proc/self/fd/N). /proc/PID/cmdline shows the argument strings the kernel copied at exec, which
   are left alone: it keeps showing the placeholder. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PLACEHOLDER "@S2TRT_SECRET@"
#define FILE_ENV "S2TRT_SECRET_FILE"
#define MAX_SECRET 4096

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
        return; /* the program's own children inherit LD_PRELOAD, not the file */
    }
    char secret[MAX_SECRET + 1];
    FILE* f = fopen(path, "rb");
    if (f == NULL)
    {
        fail("cannot open", path);
    }
    size_t const n = fread(secret, 1, sizeof secret, f);
    fclose(f);
    if (n == 0 || n > MAX_SECRET || memchr(secret, '\0', n) != NULL)
    {
        fail("empty, too long or holding a NUL:", path);
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
