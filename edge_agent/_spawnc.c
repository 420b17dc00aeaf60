/* The forker's compiled part (edge_agent/_forker.py): a task's child made without copying
 * the forker's memory.
 *
 * A child cloned from a Python process gets a copy of its page tables, and every page its
 * Python code touches before the exec is copied: most of what a no-op task cost (issue 14,
 * docs/agent.md). Here the child shares the forker's memory (CLONE_VM | CLONE_VFORK, on a
 * stack of its own, the forker suspended until the child execs or exits) and runs only
 * system calls, what _child.exec_child does, in the same order: session, descriptors,
 * cgroup, user, umask, rlimits, death signal, the gate, the work directory, exec. It is the
 * supervisor's child (CLONE_PARENT), as the forker's Python clones are.
 *
 * The forker is suspended until the exec, and the child waits at its gate for the
 * supervisor, which waits for the child's pid: so the child sends its pid to the supervisor
 * itself, first thing, on the forker's socket (the answer the supervisor reads). What went
 * wrong before the exec is left in the shared request (the errno and where) for the forker
 * to report as text on the exec pipe, as a Python child does.
 *
 * Signals: all are blocked across the clone (no handler of the forker's may run on the
 * child's stack over shared memory); the child sets every disposition back to the default,
 * then the forker's mask, before anything else: a task starts as from a fresh exec, not
 * with SIGPIPE ignored as a Python process has it. Optional at build time (pyproject.toml):
 * without a compiler the forker makes its children in Python.
 */
#define _GNU_SOURCE
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define STACK_SIZE (256 * 1024)

/* The raw credential calls: on 32-bit ABIs (ARM, i386) the plain numbers take 16-bit ids. */
#ifdef SYS_setresuid32
#define SYS_SETGROUPS SYS_setgroups32
#define SYS_SETRESGID SYS_setresgid32
#define SYS_SETRESUID SYS_setresuid32
#else
#define SYS_SETGROUPS SYS_setgroups
#define SYS_SETRESGID SYS_setresgid
#define SYS_SETRESUID SYS_setresuid
#endif
#define FDS 6 /* stdin, stdout, stderr, exec pipe, work directory, gate (or -1) */

/* Where a child failed (``where``): before the exec, at exec path ``i >= 0``, or nowhere
 * found. */
enum { AT_SETUP = -2, AT_NOT_FOUND = -1 };

typedef struct {
    char **argv, **envp, **paths;
    Py_ssize_t npaths, nlimits;
    int *resources;
    struct rlimit *limits;
    int has_ids;
    uid_t uid;
    gid_t gid;
    pid_t parent;
    int fds[FDS];
    const char *procs; /* the attempt's cgroup.procs, or NULL */
    int sock;
    sigset_t mask; /* the forker's, restored in the child */
    /* written by the child (shared memory), read once it has exec'd or exited: ``failed``
     * only on its way to exit 127 (an exec that failed before one that worked leaves its
     * errno and path here, and is no failure) */
    volatile int failed, error, where;
} Request;

static int format_pid(char *out, long value) {
    char digits[24];
    int n = 0, len = 0;
    do {
        digits[n++] = (char)('0' + value % 10);
        value /= 10;
    } while (value > 0);
    while (n > 0)
        out[len++] = digits[--n];
    return len;
}

static void fail(Request *r, int where) {
    r->error = errno;
    r->where = where;
    r->failed = 1;
    _exit(127);
}

static int child(void *arg) {
    Request *r = (Request *)arg;
    char pid[24];
    int len = format_pid(pid, (long)syscall(SYS_getpid));
    if (send(r->sock, pid, (size_t)len, MSG_NOSIGNAL) != len)
        _exit(137); /* the supervisor cannot know us: nothing may run */
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            sigaction(sig, &dfl, NULL); /* the C library's own refuse: nothing to reset */
    sigprocmask(SIG_SETMASK, &r->mask, NULL);
    if (setsid() < 0)
        fail(r, AT_SETUP);
    for (int target = 0; target < 3; target++)
        if (dup2(r->fds[target], target) < 0)
            fail(r, AT_SETUP);
    if (r->procs != NULL) { /* while still privileged: every descendant is born there */
        int fd = open(r->procs, O_WRONLY | O_CLOEXEC);
        if (fd >= 0) {
            ssize_t ignored = write(fd, pid, (size_t)len);
            (void)ignored;
            close(fd);
        }
    }
    if (r->has_ids) { /* raw calls: the C library's would signal every thread of the forker */
        if (syscall(SYS_SETGROUPS, 0, NULL) < 0 ||
            syscall(SYS_SETRESGID, r->gid, r->gid, r->gid) < 0 ||
            syscall(SYS_SETRESUID, r->uid, r->uid, r->uid) < 0)
            fail(r, AT_SETUP);
    }
    umask(022);
    for (Py_ssize_t i = 0; i < r->nlimits; i++)
        if (setrlimit(r->resources[i], &r->limits[i]) < 0)
            fail(r, AT_SETUP);
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0)
        fail(r, AT_SETUP);
    if (getppid() != r->parent)
        _exit(137); /* the supervisor died before the death signal was armed */
    if (r->fds[5] >= 0) {
        char word = 0;
        if (read(r->fds[5], &word, 1) != 1 || word != '1')
            _exit(137); /* the supervisor died before releasing us */
    }
    if (fchdir(r->fds[4]) < 0)
        fail(r, AT_SETUP);
    r->where = AT_NOT_FOUND;
    for (Py_ssize_t i = 0; i < r->npaths; i++) {
        execve(r->paths[i], r->argv, r->envp);
        if (errno != ENOENT && errno != ENOTDIR) { /* found but not runnable: that is it */
            r->error = errno;
            r->where = (int)i;
        }
    }
    if (r->where == AT_NOT_FOUND)
        r->error = ENOENT;
    r->failed = 1;
    _exit(127);
}

/* A NULL-terminated array of the bytes in ``list`` (borrowed: valid while ``list`` is). */
static char **strings(PyObject *list, Py_ssize_t *count) {
    if (!PyList_Check(list)) {
        PyErr_SetString(PyExc_TypeError, "a list of bytes is expected");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(list);
    char **out = PyMem_Calloc((size_t)n + 1, sizeof(char *));
    if (out == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(list, i);
        if (!PyBytes_Check(item) || (Py_ssize_t)strlen(PyBytes_AS_STRING(item)) !=
                                        PyBytes_GET_SIZE(item)) {
            PyErr_SetString(PyExc_ValueError, "bytes without NUL are expected");
            PyMem_Free(out);
            return NULL;
        }
        out[i] = PyBytes_AS_STRING(item);
    }
    if (count != NULL)
        *count = n;
    return out;
}

PyDoc_STRVAR(spawn_doc,
"spawn(argv, envp, paths, limits, ids, parent, fds, procs, sock) -> (pid, error, where)\n\n"
"Make a task's child as _child.exec_child would (argv, envp, paths: lists of bytes;\n"
"limits: [(resource, soft, hard)]; ids: (uid, gid) or None; parent: the supervisor's\n"
"pid; fds: the six descriptors; procs: the cgroup's cgroup.procs or None; sock: where\n"
"the child sends its pid). Returns once the child has exec'd or exited: pid -errno when\n"
"no child was made; else error 0 (it exec'd, or exited without a word: 137), or the\n"
"errno of what failed before the exec and where (-2 before the exec paths, -1 none\n"
"found, i: exec path i).");

static PyObject *spawn(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *argv_list, *envp_list, *paths_list, *limits_list, *ids, *fds;
    PyObject *procs;
    int parent, sock;
    if (!PyArg_ParseTuple(args, "O!O!O!O!OiO!Oi", &PyList_Type, &argv_list, &PyList_Type,
                          &envp_list, &PyList_Type, &paths_list, &PyList_Type, &limits_list,
                          &ids, &parent, &PyTuple_Type, &fds, &procs, &sock))
        return NULL;
    Request r;
    memset(&r, 0, sizeof r);
    r.parent = parent;
    r.sock = sock;
    if (PyTuple_GET_SIZE(fds) != FDS) {
        PyErr_SetString(PyExc_ValueError, "six descriptors are expected");
        return NULL;
    }
    for (int i = 0; i < FDS; i++) {
        r.fds[i] = (int)PyLong_AsLong(PyTuple_GET_ITEM(fds, i));
        if (PyErr_Occurred())
            return NULL;
    }
    if (ids != Py_None) {
        unsigned int uid, gid;
        if (!PyArg_ParseTuple(ids, "II", &uid, &gid))
            return NULL;
        r.has_ids = 1, r.uid = (uid_t)uid, r.gid = (gid_t)gid;
    }
    if (procs != Py_None) {
        if (!PyBytes_Check(procs)) {
            PyErr_SetString(PyExc_TypeError, "procs: bytes or None");
            return NULL;
        }
        r.procs = PyBytes_AS_STRING(procs);
    }
    PyObject *result = NULL;
    void *stack = MAP_FAILED;
    r.argv = strings(argv_list, NULL);
    r.envp = r.argv ? strings(envp_list, NULL) : NULL;
    r.paths = r.envp ? strings(paths_list, &r.npaths) : NULL;
    if (r.paths == NULL)
        goto done;
    r.nlimits = PyList_GET_SIZE(limits_list);
    r.resources = PyMem_Calloc((size_t)r.nlimits + 1, sizeof(int));
    r.limits = PyMem_Calloc((size_t)r.nlimits + 1, sizeof(struct rlimit));
    if (r.resources == NULL || r.limits == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < r.nlimits; i++) {
        int resource;
        unsigned long long soft, hard;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(limits_list, i), "iKK", &resource, &soft, &hard))
            goto done;
        r.resources[i] = resource;
        r.limits[i].rlim_cur = (rlim_t)soft;
        r.limits[i].rlim_max = (rlim_t)hard;
    }
    stack = mmap(NULL, STACK_SIZE, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED) {
        PyErr_SetFromErrno(PyExc_OSError);
        goto done;
    }
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &r.mask);
    pid_t pid = clone(child, (char *)stack + STACK_SIZE, CLONE_VM | CLONE_VFORK | CLONE_PARENT,
                      &r);
    int error = errno;
    pthread_sigmask(SIG_SETMASK, &r.mask, NULL);
    if (pid < 0)
        result = Py_BuildValue("(iii)", -error, 0, 0);
    else
        result = Py_BuildValue("(iii)", (int)pid, r.failed ? r.error : 0, r.where);
done:
    if (stack != MAP_FAILED)
        munmap(stack, STACK_SIZE);
    PyMem_Free(r.argv);
    PyMem_Free(r.envp);
    PyMem_Free(r.paths);
    PyMem_Free(r.resources);
    PyMem_Free(r.limits);
    return result;
}

static PyMethodDef methods[] = {
    {"spawn", spawn, METH_VARARGS, spawn_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_spawnc", "The forker's compiled part (see _spawnc.c).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__spawnc(void) { return PyModule_Create(&module); }
