/* Writes test audio with libsndfile: a sine of FREQ Hz at RATE, CHANNELS channels, SECONDS long.
 * The container follows the extension: .wav (16-bit PCM), .flac, .ogg (Vorbis), .mp3.
 * Usage: test_prep_fixture PATH RATE CHANNELS SECONDS FREQ [EXTRA]
 * EXTRA (.wav only): afterwards the RIFF and data chunk sizes are raised so that the header states
 * EXTRA frames more than the file holds (libsndfile then reads the frames that are there and logs
 * "data : <stated> (should be <present>)").
 * Exit 77 when this libsndfile cannot write the format (the caller skips that file). */
#include <math.h>
#include <stdint.h>
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

static uint32_t get_le32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put_le32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

/* Raises the RIFF size and the data chunk size of a 16-bit PCM WAV by `bytes`. */
static int overstate_wav(const char *path, uint32_t bytes) {
    FILE *f = fopen(path, "r+b");
    unsigned char head[12], chunk[8];
    if (!f || fread(head, 1, 12, f) != 12 || memcmp(head, "RIFF", 4) != 0 || memcmp(head + 8, "WAVE", 4) != 0) {
        fprintf(stderr, "%s: not a RIFF/WAVE file\n", path);
        if (f) fclose(f);
        return 1;
    }
    put_le32(head + 4, get_le32(head + 4) + bytes);
    int ok = fseek(f, 0, SEEK_SET) == 0 && fwrite(head, 1, 12, f) == 12;
    long at = 12;
    while (ok && fseek(f, at, SEEK_SET) == 0 && fread(chunk, 1, 8, f) == 8) {
        uint32_t size = get_le32(chunk + 4);
        if (memcmp(chunk, "data", 4) == 0) {
            put_le32(chunk + 4, size + bytes);
            ok = fseek(f, at, SEEK_SET) == 0 && fwrite(chunk, 1, 8, f) == 8;
            return (fclose(f) == 0 && ok) ? 0 : 1;
        }
        at += 8 + (long)size + (long)(size & 1);
    }
    fclose(f);
    fprintf(stderr, "%s: no data chunk\n", path);
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 6 && argc != 7) {
        fprintf(stderr, "usage: test_prep_fixture PATH RATE CHANNELS SECONDS FREQ [EXTRA]\n");
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
    long extra = argc == 7 ? atol(argv[6]) : 0;
    if (extra < 0 || (extra > 0 && si.format != (SF_FORMAT_WAV | SF_FORMAT_PCM_16))) {
        fprintf(stderr, "%s: EXTRA needs a .wav and a count >= 0\n", path);
        return 2;
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
    return extra > 0 ? overstate_wav(path, (uint32_t)extra * 2u * (uint32_t)channels) : 0;
}
