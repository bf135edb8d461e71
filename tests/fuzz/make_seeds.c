/* Writes the generated part of the seed corpus (`make_seeds OUTDIR`, run by make_seeds.sh):
 *   OUTDIR/shard/{v2-3rows.h5, v2-1row.h5}     shards as remixer-prep writes them (data/shard.h)
 *   OUTDIR/checkpoint/vae-step1.h5             a checkpoint of fuzz_layout.h's model, as
 *                                              remixer-train writes it (rmx_ckpt_save), and
 *                                              vae-step1-old-format.h5, the same without its
 *                                              checksum block (the format before the block)
 *   OUTDIR/audio/{wav-mono16, wav-stereo-float, ogg-vorbis, flac}  short sounds; byte 0 of each is
 *                                              the harness's extension selector
 * Everything is deterministic and small. */
#include <math.h>
#include <sndfile.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/shard.h"
#include "fuzz_layout.h"
#include "train/checkpoint.h"

static void die(const char *what, const char *err) {
    fprintf(stderr, "make_seeds: %s: %s\n", what, err);
    exit(1);
}

static void write_shard(const char *path, int rows, int n_mels, int frames) {
    char err[1024];
    rmx_mel_params p = rmx_fuzz_mel_params(n_mels, frames, 3);
    rmx_shard_writer *w = rmx_shard_create(path, &p, 0, 1, err, sizeof err);
    if (!w) die(path, err);
    float *mel = malloc((size_t)n_mels * frames * sizeof *mel);
    for (int r = 0; r < rows; r++) {
        for (int i = 0; i < n_mels * frames; i++) mel[i] = sinf(0.1f * (float)(i + 31 * r));
        char source[64];
        snprintf(source, sizeof source, "%s/clip%d.wav", p.genre_names[r % 3], r);
        if (rmx_shard_append(w, mel, r % 3, source, 16 * r, err, sizeof err) != 0) die(path, err);
    }
    free(mel);
    if (rmx_shard_close(w, err, sizeof err) != 0) die(path, err);
}

static void write_checkpoint(const char *outdir) {
    char dir[1024], err[2048];
    snprintf(dir, sizeof dir, "%s/ckpt-tmp", outdir);
    rmx_fuzz_model m;
    rmx_fuzz_model_init(&m);
    rmx_ckpt_writer *w = rmx_ckpt_writer_create(dir, 1, &m.layout, err, sizeof err);
    if (!w) die(dir, err);
    rmx_ckpt_meta meta = {.stage = "vae", .step = 1, .samples_seen = 4, .seed = 7, .world_size = 1,
                          .global_batch = 4, .micro_batch = 2, .input_shape = {1, 8, 16}, .adam_step = 1,
                          .config = "stage: vae\ntrain:\n  steps: 1\n"};
    rmx_ckpt_save(w, &meta, 0);
    rmx_ckpt_outcome o;
    if (rmx_ckpt_writer_collect(w, 1, &o) && o.failed) die(o.path, o.error);
    rmx_ckpt_writer_free(w);
    rmx_fuzz_model_free(&m);
    char from[1200], to[1200];
    rmx_ckpt_path(dir, 1, from, sizeof from);
    snprintf(to, sizeof to, "%s/checkpoint/vae-step1.h5", outdir);
    if (rename(from, to) != 0) die(to, "rename failed");
    rmdir(dir);
    /* The same without its checksum block: a checkpoint of the format before the block. */
    char old[1200];
    snprintf(old, sizeof old, "%s/checkpoint/vae-step1-old-format.h5", outdir);
    FILE *in = fopen(to, "rb"), *out = fopen(old, "wb");
    if (!in || !out || fseek(in, 4096, SEEK_SET) != 0) die(old, "cannot copy the checkpoint");
    for (int c; (c = fgetc(in)) != EOF;) fputc(c, out);
    fclose(in);
    if (fclose(out) != 0) die(old, "write failed");
}

/* A sound through libsndfile, then prefixed with the extension selector byte. */
static void write_sound(const char *outdir, const char *name, int selector, int format, int channels, int rate,
                        int frames) {
    char tmp[1200], path[1200];
    snprintf(tmp, sizeof tmp, "%s/audio/.tmp", outdir);
    snprintf(path, sizeof path, "%s/audio/%s", outdir, name);
    SF_INFO si = {.samplerate = rate, .channels = channels, .format = format};
    SNDFILE *sf = sf_open(tmp, SFM_WRITE, &si);
    if (!sf) die(name, sf_strerror(NULL));
    float *x = malloc((size_t)frames * channels * sizeof *x);
    for (int i = 0; i < frames * channels; i++) x[i] = 0.5f * sinf(0.05f * (float)i);
    if (sf_writef_float(sf, x, frames) != frames) die(name, sf_strerror(sf));
    free(x);
    sf_close(sf);
    FILE *in = fopen(tmp, "rb"), *out = fopen(path, "wb");
    if (!in || !out) die(name, "cannot copy");
    fputc(selector, out);
    int c;
    while ((c = fgetc(in)) != EOF) fputc(c, out);
    fclose(in);
    fclose(out);
    unlink(tmp);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: make_seeds OUTDIR\n");
        return 2;
    }
    const char *out = argv[1];
    char p[1200];
    static const char *const subs[] = {"shard", "checkpoint", "audio"};
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s", out, subs[i]);
        mkdir(p, 0755);
    }
    snprintf(p, sizeof p, "%s/shard/v2-3rows.h5", out);
    write_shard(p, 3, 8, 16);
    snprintf(p, sizeof p, "%s/shard/v2-1row.h5", out);
    write_shard(p, 1, 4, 4);
    write_checkpoint(out);
    /* selector = index into fuzz_audio.c's k_names: 0 wav, 1 ogg, 2 flac, 3 aiff */
    write_sound(out, "wav-mono16", 0, SF_FORMAT_WAV | SF_FORMAT_PCM_16, 1, 22050, 2000);
    write_sound(out, "wav-stereo-float-44k", 0, SF_FORMAT_WAV | SF_FORMAT_FLOAT, 2, 44100, 1500);
    write_sound(out, "ogg-vorbis", 1, SF_FORMAT_OGG | SF_FORMAT_VORBIS, 1, 16000, 4000);
    write_sound(out, "flac-16k", 2, SF_FORMAT_FLAC | SF_FORMAT_PCM_16, 1, 16000, 1200);
    write_sound(out, "aiff-8bit", 3, SF_FORMAT_AIFF | SF_FORMAT_PCM_S8, 1, 8000, 600);
    return 0;
}
