/* The C API from C (what JNI and Swift see): c_api BUNDLE IMAGE_FILE RAW_RGB WIDTH HEIGHT QUESTION prints three
 * JSON lines: the answer for the image file, the answer for the same pixels passed raw (evr_generate_rgb),
 * and the error for a bundle that does not exist. Built beside edgevlm-run; run by tests/test_native.py. */
#include <stdio.h>
#include <stdlib.h>

#include "edgevlm_native.h"

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
  if (argc != 7) return 2;
  char *err = NULL;
  evr_runner *r = evr_open(argv[1], 1, &err);
  if (!r) return print_or_fail(NULL, err);
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
