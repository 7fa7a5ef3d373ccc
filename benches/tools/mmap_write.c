// Write 1 GiB into a fresh, fallocated file the way vcache ingests (or with pwrite), and print the CPU
// it took. Used to separate the data path's cost from this VM's cost of touching fresh guest memory
// (benches/RESULTS.md, "ingest"):
//   gcc -O2 -o /tmp/mmap_write benches/tools/mmap_write.c
//   for m in huge-pop pwrite random-pop; do /tmp/mmap_write $m /tmp/mw.data; done   # back to back: warm
//   sleep 8; /tmp/mmap_write huge-pop /tmp/mw.data                                  # after a pause: cold
// Modes: pwrite (4 MiB writes from a buffer), plain, random (MADV_RANDOM), huge (MADV_HUGEPAGE), and
// any of these with -pop (MADV_POPULATE_WRITE of each 4 MiB window before it is written).
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

static double cpu(void) {
    struct rusage r;
    getrusage(RUSAGE_SELF, &r);
    return r.ru_utime.tv_sec + r.ru_utime.tv_usec / 1e6 + r.ru_stime.tv_sec + r.ru_stime.tv_usec / 1e6;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODE FILE\n", argv[0]);
        return 2;
    }
    const char *mode = argv[1], *path = argv[2];
    const long n = 1L << 30, w = 4L << 20;
    unlink(path);
    int fd = open(path, O_RDWR | O_CREAT, 0644);
    if (fd < 0 || posix_fallocate(fd, 0, n) != 0 || fsync(fd) != 0) {
        perror(path);
        return 1;
    }
    char *buf = malloc(w);
    memset(buf, 7, w);
    double c0 = cpu();
    if (!strcmp(mode, "pwrite")) {
        for (long o = 0; o < n; o += w)
            if (pwrite(fd, buf, w, o) != w) return perror("pwrite"), 1;
    } else {
        char *m = mmap(0, n, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (m == MAP_FAILED) return perror("mmap"), 1;
        if (strstr(mode, "random")) madvise(m, n, MADV_RANDOM);
        if (strstr(mode, "huge")) madvise(m, n, MADV_HUGEPAGE);
        int pop = strstr(mode, "pop") != NULL;
        for (long o = 0; o < n; o += w) {
            if (pop && madvise(m + o, w, MADV_POPULATE_WRITE) != 0) perror("MADV_POPULATE_WRITE");
            memcpy(m + o, buf, w);
        }
        munmap(m, n);
    }
    double c1 = cpu();
    fdatasync(fd);
    printf("%-12s write 1 GiB: %5.0f ms CPU\n", mode, (c1 - c0) * 1e3);
    close(fd);
    unlink(path);
    return 0;
}
