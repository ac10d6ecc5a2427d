package edgevlm.app

import android.os.Bundle
import androidx.activity.ComponentActivity
import androidx.activity.compose.rememberLauncherForActivityResult
import androidx.activity.compose.setContent
import androidx.activity.result.PickVisualMediaRequest
import androidx.activity.result.contract.ActivityResultContracts.PickVisualMedia
import androidx.compose.foundation.Image
import androidx.compose.foundation.layout.Column
import androidx.compose.foundation.layout.Row
import androidx.compose.foundation.layout.fillMaxWidth
import androidx.compose.foundation.layout.height
import androidx.compose.foundation.layout.padding
import androidx.compose.foundation.rememberScrollState
import androidx.compose.foundation.verticalScroll
import androidx.compose.material3.Button
import androidx.compose.material3.MaterialTheme
import androidx.compose.material3.OutlinedTextField
import androidx.compose.material3.Text
import androidx.compose.runtime.Composable
import androidx.compose.runtime.getValue
import androidx.compose.runtime.mutableStateOf
import androidx.compose.runtime.remember
import androidx.compose.runtime.setValue
import androidx.compose.ui.Modifier
import androidx.compose.ui.graphics.asImageBitmap
import androidx.compose.ui.unit.dp
import edgevlm.core.ModelBundle
import edgevlm.core.EdgeVLMError
import edgevlm.core.Generator
import java.io.File
import kotlin.concurrent.thread

/**
 * One screen: pick a bundle (pushed into `files/bundles/` with adb, README.md), pick a photo, ask, and watch the
 * answer stream with its time to first token and decode speed. Everything but the widgets is edgevlm.core.
 */
class MainActivity : ComponentActivity() {
    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        val bundles = File(getExternalFilesDir(null), "bundles")
        setContent { MaterialTheme { Screen(bundles) } }
    }
}

@Composable
private fun Screen(bundlesDir: File) {
    val names = remember { bundlesDir.listFiles()?.filter { it.isDirectory }?.map { it.name }?.sorted().orEmpty() }
    var chosen by remember { mutableStateOf<String?>(null) }
    var photo by remember { mutableStateOf<Photo?>(null) }
    var question by remember { mutableStateOf("Describe the image.") }
    var answer by remember { mutableStateOf("") }
    var status by remember { mutableStateOf(if (names.isEmpty()) "No bundles in $bundlesDir: see README.md" else "") }
    val resolver = androidx.compose.ui.platform.LocalContext.current.contentResolver
    val picker = rememberLauncherForActivityResult(PickVisualMedia()) { uri ->
        if (uri != null) photo = runCatching { resolver.openInputStream(uri)!!.use(::decodePhoto) }.onFailure { status = it.message.orEmpty() }.getOrNull()
    }

    Column(Modifier.padding(16.dp).verticalScroll(rememberScrollState())) {
        Text("Bundle", style = MaterialTheme.typography.titleMedium)
        for (name in names) {
            Row { Button(onClick = { chosen = name }) { Text(if (name == chosen) "● $name" else name) } }
        }
        Button(onClick = { picker.launch(PickVisualMediaRequest(PickVisualMedia.ImageOnly)) }) { Text("Pick a photo") }
        photo?.let { Preview(it) }
        OutlinedTextField(question, { question = it }, Modifier.fillMaxWidth(), label = { Text("Question") })
        Button(
            enabled = chosen != null && photo != null,
            onClick = {
                val image = photo ?: return@Button
                val dir = File(bundlesDir, chosen ?: return@Button)
                answer = ""
                status = "running…"
                thread { status = ask(dir, image, question) { answer = it } }
            },
        ) { Text("Ask") }
        Text(answer, style = MaterialTheme.typography.bodyLarge)
        Text(status, style = MaterialTheme.typography.bodySmall)
    }
}

/** Runs one question off the UI thread; returns the status line (timing, or the one-line error). */
private fun ask(dir: File, photo: Photo, question: String, onText: (String) -> Unit): String = try {
    val bundle = ModelBundle.open(dir)
    Backends.open(bundle).use { backend ->
        val a = Generator(bundle, backend).answer(question, photo.rgb, photo.width, photo.height) { _, text -> onText(text) }
        onText(a.text)
        "TTFT %.0f ms · %.1f tokens/s · %d tokens".format(a.ttftMs, a.tokensPerSecond, a.ids.size)
    }
} catch (e: EdgeVLMError) {
    e.message.orEmpty()
}

/** The picked photo as the user sees it (display only: the model gets the core's resize). */
@Composable
private fun Preview(photo: Photo) {
    val bitmap = remember(photo) {
        val argb = IntArray(photo.width * photo.height) { i ->
            val r = photo.rgb[i * 3].toInt() and 0xFF
            val g = photo.rgb[i * 3 + 1].toInt() and 0xFF
            val b = photo.rgb[i * 3 + 2].toInt() and 0xFF
            (0xFF shl 24) or (r shl 16) or (g shl 8) or b
        }
        android.graphics.Bitmap.createBitmap(argb, photo.width, photo.height, android.graphics.Bitmap.Config.ARGB_8888)
    }
    Image(bitmap.asImageBitmap(), contentDescription = "picked photo", modifier = Modifier.height(200.dp))
}
