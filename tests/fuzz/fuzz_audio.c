/* libFuzzer harness: the audio decode path of remixer-prep and the inference programs
 * (data/audio.c over libsndfile and libsoxr): rmx_audio_probe, then rmx_audio_load_mono at the
 * prep's default rate (22,050 Hz), as data/prep.c calls them. The input's first byte picks the file
 * name's extension (libsndfile looks at it for a few headerless formats); the rest is the file.
 * Neither call may leave a file open. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "data/audio.h"
#include "fuzz_common.h"

static const char *const k_names[] = {"in.wav", "in.ogg", "in.flac", "in.aiff", "in.au", "in.mp3", "in.raw", "in"};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const char *name = k_names[data[0] % (sizeof k_names / sizeof k_names[0])];
    char path[1024], err[1024];
    rmx_fuzz_write(name, data + 1, size - 1, path, sizeof path);
    int fds = rmx_fuzz_open_fds();
    rmx_audio_info info;
    rmx_audio_status s = rmx_audio_probe(path, &info, err, sizeof err);
    rmx_fuzz_note("probe", s == RMX_AUDIO_OK ? "ok" : err);
    rmx_fuzz_check_fds(fds, "rmx_audio_probe");
    if (s != RMX_AUDIO_OK) return 0;
    if (info.sample_rate <= 0 || info.channels <= 0 || info.frames <= 0) {
        fprintf(stderr, "probe OK with rate %d, channels %d, frames %lld\n", info.sample_rate, info.channels,
                (long long)info.frames);
        abort();
    }
    float *x = NULL;
    int64_t n = 0;
    s = rmx_audio_load_mono(path, 22050, &x, &n, &info, err, sizeof err);
    rmx_fuzz_note("load", s == RMX_AUDIO_OK ? "ok" : err);
    if (s == RMX_AUDIO_OK) {
        if (n != rmx_audio_resampled_length(info.frames, info.sample_rate, 22050)) {
            fprintf(stderr, "load: %lld samples, expected %lld\n", (long long)n,
                    (long long)rmx_audio_resampled_length(info.frames, info.sample_rate, 22050));
            abort();
        }
        volatile float sum = 0; /* touch every sample (ASan/MSan see reads of the buffer) */
        for (int64_t i = 0; i < n; i++) sum += x[i];
        (void)sum;
    }
    free(x);
    rmx_fuzz_check_fds(fds, "rmx_audio_load_mono");
    return 0;
}
