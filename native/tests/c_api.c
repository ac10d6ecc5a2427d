/* The C API from C (what JNI and Swift see): c_api BUNDLE IMAGE_FILE RAW_RGB WIDTH HEIGHT QUESTION prints three
 * JSON lines: the answer for the image file, the answer for the same pixels passed raw (evr_generate_rgb),
 * and the error for a bundle that does not exist. Built beside edgevlm-run; run by tests/test_native.py.
 *
 * With four more arguments, RESIZED_RGB SIZE BEFORE_IDS AFTER_IDS (ids comma-separated, AFTER_IDS may be
 * "-"), it first prints {"stepwise": [...], "positions": N}: 8 greedy ids from evr_prefill + evr_decode, the
 * loop a client runs itself (EOS does not stop it), then the three lines above. */
#include <stdio.h>
#include <stdlib.h>

#include <string.h>

#include "edgevlm_native.h"

static int print_or_fail(char *s, char *err);

static int parse_ids(const char *s, int32_t *out, int cap) {
  int n = 0;
  if (strcmp(s, "-") == 0) return 0;
  for (char *end; *s && n < cap; s = *end ? end + 1 : end) out[n++] = (int32_t)strtol(s, &end, 10);
  return n;
}

static int argmax(const float *v, int n) {
  int best = 0;
  for (int i = 1; i < n; ++i)
    if (v[i] > v[best]) best = i;
  return best;
}

/* 8 greedy tokens over the stepwise calls, as the Android core's Generator runs them */
static int stepwise(evr_runner *r, char **argv) {
  static int32_t before[4096], after[4096];
  int n_before = parse_ids(argv[9], before, 4096), n_after = parse_ids(argv[10], after, 4096);
  int size = atoi(argv[8]), n_vocab = evr_n_vocab(r);
  unsigned char *levels = malloc((size_t)size * size * 3);
  float *logits = malloc(sizeof(float) * (size_t)n_vocab);
  char *err = NULL;
  FILE *f = fopen(argv[7], "rb");
  if (!f || fread(levels, 1, (size_t)size * size * 3, f) != (size_t)size * size * 3) return 3;
  fclose(f);
  int pos = evr_prefill(r, before, n_before, levels, size, after, n_after, logits, &err);
  if (pos < 0) return print_or_fail(NULL, err);
  printf("{\"positions\": %d, \"stepwise\": [", pos);
  for (int i = 0; i < 8; ++i) {
    int tok = argmax(logits, n_vocab);
    printf(i ? ", %d" : "%d", tok);
    if (i < 7 && evr_decode(r, tok, pos++, logits, &err) != 0) {
      printf("]}\n");
      return print_or_fail(NULL, err);
    }
  }
  printf("]}\n");
  free(levels);
  free(logits);
  return 0;
}

static int print_or_fail(char *s, char *err) {
  if (!s) {
    fprintf(stderr, "%s\n", err ? err : "no error text");
    evr_string_free(err);
    return 1;
  }
  printf("%s\n", s);
  evr_string_free(s);
  return 0;
}

int main(int argc, char **argv) {
  if (argc != 7 && argc != 11) return 2;
  char *err = NULL;
  evr_runner *r = evr_open(argv[1], 1, &err);
  if (!r) return print_or_fail(NULL, err);
  if (argc == 11 && stepwise(r, argv)) return 1;
  if (print_or_fail(evr_generate(r, argv[2], argv[6], 32, &err), err)) return 1;
  int w = atoi(argv[4]), h = atoi(argv[5]);
  unsigned char *rgb = malloc((size_t)w * h * 3);
  FILE *f = fopen(argv[3], "rb");
  if (!f || fread(rgb, 1, (size_t)w * h * 3, f) != (size_t)w * h * 3) return 3;
  fclose(f);
  if (print_or_fail(evr_generate_rgb(r, rgb, w, h, argv[6], 32, &err), err)) return 1;
  free(rgb);
  evr_free(r);
  err = NULL;
  if (evr_open("/nonexistent/bundle", 1, &err) || !err) return 4;
  printf("{\"error\": \"%s\"}\n", err);
  evr_string_free(err);
  return 0;
}
