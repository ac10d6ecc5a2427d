// JNI glue for the Android sample's edgevlm.jni.NativeBackend (examples/android/jni): the stepwise C API
// (evr_open, evr_n_vocab, evr_prefill, evr_decode, evr_free) as the core's Backend calls it. Plain C++ over
// jni.h, so the same file builds with the NDK for a phone and against a JDK on Linux, where
// tests/test_android_jni.py loads it into a JVM and answers the golden GGUF bundles.
//
// Failures throw java.lang.IllegalStateException carrying the library's one line (`path: problem`); the
// Kotlin side turns it into EdgeVLMError. A handle is the evr_runner pointer as a jlong.
#include <jni.h>

#include <string>
#include <vector>

#include "edgevlm_native.h"

namespace {

void throw_error(JNIEnv* env, char* err, const char* fallback) {
  std::string message = err ? err : fallback;
  evr_string_free(err);
  if (env->ExceptionCheck()) return;  // a JNI call already threw (e.g. OutOfMemoryError)
  jclass cls = env->FindClass("java/lang/IllegalStateException");
  if (cls) env->ThrowNew(cls, message.c_str());
}

evr_runner* runner(JNIEnv* env, jlong handle) {
  auto* r = reinterpret_cast<evr_runner*>(handle);
  if (!r) throw_error(env, nullptr, "the native runner is closed");
  return r;
}

std::vector<int32_t> ints(JNIEnv* env, jintArray a) {
  std::vector<int32_t> v(a ? env->GetArrayLength(a) : 0);
  if (!v.empty()) env->GetIntArrayRegion(a, 0, jsize(v.size()), reinterpret_cast<jint*>(v.data()));
  return v;
}

jfloatArray to_java(JNIEnv* env, const std::vector<float>& logits) {
  jfloatArray out = env->NewFloatArray(jsize(logits.size()));
  if (out) env->SetFloatArrayRegion(out, 0, jsize(logits.size()), logits.data());
  return out;
}

}  // namespace

extern "C" {

JNIEXPORT jlong JNICALL Java_edgevlm_jni_NativeBackend_open(JNIEnv* env, jclass, jstring dir, jint threads) {
  const char* path = dir ? env->GetStringUTFChars(dir, nullptr) : nullptr;
  if (dir && !path) return 0;  // OutOfMemoryError thrown
  char* err = nullptr;
  evr_runner* r = evr_open(path ? path : "", threads, &err);
  if (path) env->ReleaseStringUTFChars(dir, path);
  if (!r) throw_error(env, err, "evr_open failed");
  return reinterpret_cast<jlong>(r);
}

JNIEXPORT jint JNICALL Java_edgevlm_jni_NativeBackend_nVocab(JNIEnv* env, jclass, jlong handle) {
  evr_runner* r = runner(env, handle);
  return r ? evr_n_vocab(r) : 0;
}

JNIEXPORT jfloatArray JNICALL Java_edgevlm_jni_NativeBackend_prefill(JNIEnv* env, jclass, jlong handle,
                                                                     jintArray before, jbyteArray levels,
                                                                     jint size, jintArray after) {
  evr_runner* r = runner(env, handle);
  if (!r) return nullptr;
  if (!levels || env->GetArrayLength(levels) != jlong(size) * size * 3) {
    throw_error(env, nullptr, "prefill: the image must hold size x size x 3 levels");
    return nullptr;
  }
  std::vector<int32_t> b = ints(env, before), a = ints(env, after);
  std::vector<uint8_t> rgb(size_t(size) * size * 3);
  env->GetByteArrayRegion(levels, 0, jsize(rgb.size()), reinterpret_cast<jbyte*>(rgb.data()));
  std::vector<float> logits(size_t(evr_n_vocab(r)));
  char* err = nullptr;
  if (evr_prefill(r, b.data(), int(b.size()), rgb.data(), size, a.data(), int(a.size()), logits.data(), &err) < 0) {
    throw_error(env, err, "evr_prefill failed");
    return nullptr;
  }
  return to_java(env, logits);
}

JNIEXPORT jfloatArray JNICALL Java_edgevlm_jni_NativeBackend_decode(JNIEnv* env, jclass, jlong handle, jint token,
                                                                    jint position) {
  evr_runner* r = runner(env, handle);
  if (!r) return nullptr;
  std::vector<float> logits(size_t(evr_n_vocab(r)));
  char* err = nullptr;
  if (evr_decode(r, token, position, logits.data(), &err) != 0) {
    throw_error(env, err, "evr_decode failed");
    return nullptr;
  }
  return to_java(env, logits);
}

JNIEXPORT void JNICALL Java_edgevlm_jni_NativeBackend_free(JNIEnv*, jclass, jlong handle) {
  evr_free(reinterpret_cast<evr_runner*>(handle));
}

}  // extern "C"
