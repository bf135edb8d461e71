/* Durable file-system helpers: a file is written under a temporary name and renamed into place,
 * so a reader never sees half a file and a crash leaves at most a stray temporary. */
#ifndef RMX_FSUTIL_H
#define RMX_FSUTIL_H
#include <stddef.h>

/* mkdir -p; returns 0 or -1 with a message naming the path. */
int rmx_mkdirs(const char *path, char *err, size_t errlen);
/* The temporary name a durable write of `path` uses: "<dir>/.<base>.tmp.<pid>". */
void rmx_tmp_name(const char *path, char *out, size_t outlen);
/* fsync(tmp), rename(tmp -> final), fsync(directory of final). */
int rmx_commit_file(const char *tmp, const char *final, char *err, size_t errlen);
/* fsync the directory holding `path` (so a rename or unlink in it survives a crash). */
int rmx_fsync_dir_of(const char *path, char *err, size_t errlen);
/* 1 if `path` is a directory, 0 otherwise. */
int rmx_is_dir(const char *path);

#endif
