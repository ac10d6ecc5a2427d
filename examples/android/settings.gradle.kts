// The edgevlm Android sample: `core` (pure Kotlin, no android.* imports: the bundle spec, tested on the JVM
// against tests/goldens) and `app` (a thin Compose shell). Gradle 8.11.1; see README.md.
pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
}
dependencyResolutionManagement {
    repositoriesMode.set(RepositoriesMode.FAIL_ON_PROJECT_REPOS)
    repositories {
        google()
        mavenCentral()
    }
}
rootProject.name = "edgevlm-android"
include(":core", ":app")
