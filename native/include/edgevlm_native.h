/* edgevlm native runner: the bundle spec (docs/bundle-spec.md) in C++, as a C API.
 *
 * What an app calls: Android through JNI, iOS through Swift's C interop, `edgevlm-run` (a thin CLI) on a
 * host or over adb. A runner owns one checked bundle and its engine; calls on one runner are not
 * thread-safe (one question at a time), separate runners are independent.
 *
 * Strings returned by the library are malloc'ed, NUL-terminated UTF-8 (JSON where said) and freed with
 * evr_string_free. Every failure is one line, `path: problem`, returned through `err` (when not NULL).
 */
#ifndef EDGEVLM_NATIVE_H
#define EDGEVLM_NATIVE_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct evr_runner evr_runner;

/* Open a bundle dir: check its manifest, paths, sizes and sha256s, then load its engine.
 * threads <= 0 uses every core. NULL on failure. */
evr_runner *evr_open(const char *bundle_dir, int threads, char **err);

/* Greedy answer to `question` about an 8-bit RGB image (height rows of width * 3 bytes), stopping at EOS or
 * after max_new_tokens. Returns a JSON object: {"ids": [...], "text": "...", "prompt_positions": N,
 * "image_ms": x, "prefill_ms": x, "decode_ms": x}; NULL on failure. */
char *evr_generate_rgb(evr_runner *runner, const uint8_t *rgb, int width, int height, const char *question,
                       int max_new_tokens, char **err);

/* The same for an image file (PNG, JPEG, ... as stb_image reads them). */
char *evr_generate(evr_runner *runner, const char *image_path, const char *question, int max_new_tokens,
                   char **err);

/* One benchmark request (the keys of edgevlm's Python bench worker: bundle, image, prompt, new_tokens, runs,
 * warmup, threads) → its result as one JSON object with the worker's keys, plus the generated ids and text
 * and the device. NULL on failure. */
char *evr_bench(const char *request_json, char **err);

/* Best-of-7 copy bandwidth in bytes/s (bytes read + written) over `threads` threads (<= 0: every core), a
 * 256 MiB copy far beyond any last-level cache: the decode roofline's denominator, as edgevlm bench measures
 * it on a host. */
double evr_bandwidth(int threads);

/* Stepwise, for clients that run the greedy loop themselves (the Android core's Backend through JNI): the
 * client builds the prompt ids and resizes the image (spec sections 4 and 6); the runner only runs the engine.
 *
 * evr_prefill starts a new prompt at position 0: the ids before the image, the image (size x size x 3 levels,
 * HWC, already resized to the bundle's image size), the ids after it. Writes the last position's logits
 * (evr_n_vocab floats) to logits_out and returns the next position, or -1 on failure (err set). */
int evr_prefill(evr_runner *runner, const int32_t *before, int n_before, const uint8_t *resized_rgb, int size,
                const int32_t *after, int n_after, float *logits_out, char **err);

/* Feeds `token` at `position` (the cache holds every position before it); its logits into logits_out.
 * 0 on success, -1 on failure (err set). */
int evr_decode(evr_runner *runner, int32_t token, int position, float *logits_out, char **err);

/* The vocabulary size: how many logits evr_prefill and evr_decode write. */
int evr_n_vocab(evr_runner *runner);

void evr_string_free(char *s);
void evr_free(evr_runner *runner);

#ifdef __cplusplus
}
#endif

#endif /* EDGEVLM_NATIVE_H */
