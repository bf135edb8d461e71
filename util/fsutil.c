#include "util/fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/log.h"

int rmx_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int rmx_mkdirs(const char *path, char *err, size_t errlen) {
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return rmx_seterr(err, errlen, "%s: path too long", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buf, 0777) != 0 && errno != EEXIST)
            return rmx_seterr(err, errlen, "%s: cannot create directory: %s", buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0777) != 0 && errno != EEXIST)
        return rmx_seterr(err, errlen, "%s: cannot create directory: %s", buf, strerror(errno));
    if (!rmx_is_dir(buf)) return rmx_seterr(err, errlen, "%s: exists and is not a directory", buf);
    return 0;
}

void rmx_tmp_name(const char *path, char *out, size_t outlen) {
    char d[4096], b[4096];
    snprintf(d, sizeof d, "%s", path);
    snprintf(b, sizeof b, "%s", path);
    snprintf(out, outlen, "%s/.%s.tmp.%ld", dirname(d), basename(b), (long)getpid());
}

int rmx_fsync_dir_of(const char *path, char *err, size_t errlen) {
    char d[4096];
    snprintf(d, sizeof d, "%s", path);
    const char *dir = dirname(d);
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0) return rmx_seterr(err, errlen, "%s: cannot open directory: %s", dir, strerror(errno));
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    if (rc != 0 && e != EINVAL) return rmx_seterr(err, errlen, "%s: fsync failed: %s", dir, strerror(e));
    return 0;
}

int rmx_commit_file(const char *tmp, const char *final, char *err, size_t errlen) {
    int fd = open(tmp, O_RDONLY);
    if (fd < 0) return rmx_seterr(err, errlen, "%s: cannot reopen to sync: %s", tmp, strerror(errno));
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    if (rc != 0) return rmx_seterr(err, errlen, "%s: fsync failed: %s", tmp, strerror(e));
    if (rename(tmp, final) != 0)
        return rmx_seterr(err, errlen, "cannot rename %s to %s: %s", tmp, final, strerror(errno));
    return rmx_fsync_dir_of(final, err, errlen);
}
