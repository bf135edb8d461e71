/* Writes test audio with libsndfile: a sine of FREQ Hz at RATE, CHANNELS channels, SECONDS long.
 * The container follows the extension: .wav (16-bit PCM), .flac, .ogg (Vorbis), .mp3.
 * Usage: test_prep_fixture PATH RATE CHANNELS SECONDS FREQ
 * Exit 77 when this libsndfile cannot write the format (the caller skips that file). */
#include <math.h>
#include <sndfile.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int format_for(const char *path) {
    const char *dot = strrchr(path, '.');
    if (!dot) return 0;
    if (strcasecmp(dot, ".wav") == 0) return SF_FORMAT_WAV | SF_FORMAT_PCM_16;
    if (strcasecmp(dot, ".flac") == 0) return SF_FORMAT_FLAC | SF_FORMAT_PCM_16;
    if (strcasecmp(dot, ".ogg") == 0) return SF_FORMAT_OGG | SF_FORMAT_VORBIS;
    if (strcasecmp(dot, ".mp3") == 0) return SF_FORMAT_MPEG | SF_FORMAT_MPEG_LAYER_III;
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: test_prep_fixture PATH RATE CHANNELS SECONDS FREQ\n");
        return 2;
    }
    const char *path = argv[1];
    int rate = atoi(argv[2]), channels = atoi(argv[3]);
    double seconds = atof(argv[4]), freq = atof(argv[5]);
    SF_INFO si = {.samplerate = rate, .channels = channels, .format = format_for(path)};
    if (!si.format || !sf_format_check(&si)) {
        fprintf(stderr, "%s: this libsndfile cannot write that format\n", path);
        return 77;
    }
    SNDFILE *f = sf_open(path, SFM_WRITE, &si);
    if (!f) {
        fprintf(stderr, "%s: %s\n", path, sf_strerror(NULL));
        return 77;
    }
    sf_count_t n = (sf_count_t)(seconds * rate);
    float *buf = malloc(sizeof(float) * (size_t)n * (size_t)channels);
    for (sf_count_t i = 0; i < n; i++)
        for (int c = 0; c < channels; c++)
            buf[i * channels + c] = (float)(0.5 * sin(2.0 * M_PI * freq * (double)i / rate));
    sf_count_t w = sf_writef_float(f, buf, n);
    sf_close(f);
    free(buf);
    if (w != n) {
        fprintf(stderr, "%s: wrote %lld of %lld frames\n", path, (long long)w, (long long)n);
        return 1;
    }
    return 0;
}
