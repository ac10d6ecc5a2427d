package edgevlm.core

import java.io.File

/**
 * The one error a user sees: a problem with the input, as one line `path: problem` (edgevlm/errors.py's
 * EdgeVLMError), so an app can show it in a single text field instead of a stack trace.
 */
class EdgeVLMError(val problem: String, val file: File? = null) :
    Exception(if (file != null) "$file: $problem" else problem)
