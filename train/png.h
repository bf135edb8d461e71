/* Spectrogram images: rows of [M x T] panels side by side, low frequencies at the bottom, written as
 * PNG (libpng) under a temporary name and renamed into place. */
#ifndef RMX_PNG_H
#define RMX_PNG_H
#include <stddef.h>

/* panels[r * cols + c] is an [m x t] row-major spectrogram; rows x cols panels, each scaled to the
 * shared range [lo, hi] (pass lo >= hi to use the min and max over all panels). */
int rmx_png_spectrograms(const char *path, const float *const *panels, int rows, int cols, int m,
                         int t, float lo, float hi, char *err, size_t errlen);

/* The same image as PNG bytes in memory: *out (malloc'd, the caller frees) holds *out_len bytes. */
int rmx_png_spectrograms_encode(const float *const *panels, int rows, int cols, int m, int t, float lo, float hi,
                                unsigned char **out, size_t *out_len, char *err, size_t errlen);

/* Writes an 8-bit RGB image [height][width][3] durably (temporary name, fsync, rename). */
int rmx_png_write_rgb(const char *path, const unsigned char *rgb, int width, int height, char *err,
                      size_t errlen);

#endif
