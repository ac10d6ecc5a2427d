// The bundle spec in pure Kotlin. org.json is the platform's on Android, so it is compileOnly here.
plugins {
    alias(libs.plugins.kotlin.jvm)
}

kotlin {
    jvmToolchain(17)
}

dependencies {
    compileOnly(libs.android.json)
    testImplementation(libs.android.json)
    testImplementation(libs.junit)
}

tasks.test {
    // the same vectors every edgevlm client checks (tests/test_android_core.py runs this suite without Gradle)
    systemProperty("edgevlm.goldens", rootDir.resolve("../../tests/goldens").canonicalPath)
}
