plugins {
    alias(libs.plugins.android.application)
    alias(libs.plugins.kotlin.android)
    alias(libs.plugins.kotlin.compose)
}

android {
    namespace = "edgevlm.app"
    compileSdk = libs.versions.compileSdk.get().toInt()
    ndkVersion = libs.versions.ndk.get()

    defaultConfig {
        applicationId = "edgevlm.app"
        minSdk = libs.versions.minSdk.get().toInt()
        targetSdk = libs.versions.targetSdk.get().toInt()
        versionCode = 1
        versionName = "0.1.0"
        testInstrumentationRunner = "androidx.test.runner.AndroidJUnitRunner"
    }
    buildFeatures {
        compose = true
    }
    // The JNI backend (not built here: no Android SDK on the development machines): edgevlm.jni.NativeBackend's
    // Kotlin and libedgevlm_jni from native/ with the NDK, llama.cpp compiled from the project's patched sources
    // (scripts/setup unpacks them into .venv/src/llama.cpp), arm64 only.
    sourceSets["main"].kotlin.srcDir("../jni/src/main/kotlin")
    defaultConfig {
        ndk { abiFilters += "arm64-v8a" }
        externalNativeBuild {
            cmake {
                arguments += listOf(
                    "-DEVR_JNI=ON", "-DEVR_LLAMA_FROM_SOURCE=ON",
                    "-DEVR_LLAMA_SRC=${rootDir.resolve("../../.venv/src/llama.cpp").canonicalPath}",
                    "-DGGML_NATIVE=OFF", "-DGGML_CPU_ARM_ARCH=armv8.2-a+dotprod", "-DGGML_OPENMP=OFF",
                )
                targets += "edgevlm_jni"
            }
        }
    }
    externalNativeBuild {
        cmake { path = file("../../../native/CMakeLists.txt") }
    }
    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
}

kotlin {
    jvmToolchain(17)
}

dependencies {
    implementation(project(":core"))
    implementation(platform(libs.compose.bom))
    implementation(libs.compose.ui)
    implementation(libs.compose.material3)
    implementation(libs.activity.compose)
    androidTestImplementation(libs.androidx.test.runner)
    androidTestImplementation(libs.androidx.test.ext.junit)
}
