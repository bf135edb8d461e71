/* WAV out: mono 16-bit PCM through libsndfile, peak-normalised, with metadata, written durably.
 *
 * The file is written to "<dir>/.<name>.tmp.<pid>" in the destination folder, closed, fsynced and
 * renamed into place, and the folder fsynced (util/fsutil.h): a reader never sees half a WAV and
 * a failure (or a crash) leaves no file under the final name; a failed call removes its temporary.
 *
 * Samples: scaled so that the peak |x| sits at `peak_dbfs` (default -1 dBFS, i.e. 0.891 of full
 * scale: headroom for the inter-sample peaks a lossy re-encode adds), then rounded to the nearest
 * 16-bit value (x * 32767, no dither, so the bytes are a pure function of the input). Silence (peak
 * 0) is written as it is. Without normalisation, samples beyond [-1, 1] are clipped.
 *
 * Metadata: RIFF INFO strings via sf_set_string: SF_STR_TITLE (INAM), SF_STR_COMMENT (ICMT, e.g.
 * the settings that made the file), SF_STR_SOFTWARE (ISFT, "Remixer" unless given), SF_STR_GENRE
 * (IGNR) and SF_STR_ARTIST (IART) where given. No date is written, so that the same call gives the
 * same bytes. */
#ifndef RMX_WAV_H
#define RMX_WAV_H

#include <stddef.h>
#include <stdint.h>

#define RMX_WAV_DEFAULT_PEAK_DBFS (-1.0)

typedef struct {
    const char *title;    /* NULL: none */
    const char *comment;  /* NULL: none */
    const char *software; /* NULL: "Remixer" */
    const char *genre;    /* NULL: none */
    const char *artist;   /* NULL: none */
    int normalize;        /* peak-normalise to peak_dbfs (1) or write the samples as they are (0) */
    double peak_dbfs;     /* <= 0 */
} rmx_wav_options;

/* What was written. */
typedef struct {
    double gain;          /* the factor applied before quantisation */
    double peak_in;       /* max |x| of the input */
    double peak_dbfs;     /* of the written samples (-inf for silence) */
    int64_t clipped;      /* samples clipped to full scale (only without normalisation) */
} rmx_wav_report;

/* title, comment, genre, artist NULL; software "Remixer"; normalize 1 at -1 dBFS. */
void rmx_wav_default_options(rmx_wav_options *o);

/* Writes x[0..n) (n >= 1, finite) at sample_rate as a mono 16-bit PCM WAV at `path`. 0, or -1
 * with a message naming the path and the reason ("out/x.wav: cannot write into folder out: No
 * such file or directory"); on failure nothing is left behind. `report` may be NULL. */
int rmx_wav_write(const char *path, const float *x, int64_t n, int sample_rate, const rmx_wav_options *o,
                  rmx_wav_report *report, char *err, size_t errlen);

/* The same WAV file in memory (libsndfile virtual I/O): the bytes rmx_wav_write would write.
 * *out (malloc'd, the caller frees) holds *out_len bytes. 0, or -1 with a message. */
int rmx_wav_encode(const float *x, int64_t n, int sample_rate, const rmx_wav_options *o, rmx_wav_report *report,
                   unsigned char **out, size_t *out_len, char *err, size_t errlen);

#endif
