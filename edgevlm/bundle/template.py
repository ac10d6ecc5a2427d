"""Prompt templates: how a question and the image placeholder become the text a model was trained on.

The rendered prompt is split at `<image>` and each text piece is tokenized on its own, the way LLaVA splices
image tokens and llama.cpp's mtmd tokenizes around its media marker, so every runtime builds the same ids.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgevlm.registry import Registry

IMAGE_PLACEHOLDER = "<image>"
TEMPLATES: Registry["Template"] = Registry("prompt template")


@dataclass(frozen=True)
class Template:
    name: str
    system: str  # text before the first user turn ("" for none)
    user: str  # prefix of a user turn
    assistant: str  # prefix of the assistant's answer; generation starts right after it
    answer_prefix: str = " "  # between the assistant prefix and the answer text
    image_last: bool = False  # put the image after the question, wherever the question had it

    def prompt(self, question: str) -> str:
        """Render one user turn whose text contains `<image>`, ending where the answer begins."""
        if self.image_last:
            text = question.replace(f"{IMAGE_PLACEHOLDER}\n", "").replace(IMAGE_PLACEHOLDER, "").strip()
            question = f"{text}\n{IMAGE_PLACEHOLDER}"
        elif IMAGE_PLACEHOLDER not in question:
            question = f"{IMAGE_PLACEHOLDER}\n{question}"
        return f"{self.system}{self.user}{question}{self.assistant}"

    def chat_template(self) -> str:
        """The same template as a Jinja chat template, for runtimes (llama.cpp) that render their own."""
        return (
            "{{ bos_token }}" + _jinja_literal(self.system)
            + "{% for m in messages %}{% if m['role'] == 'user' %}" + _jinja_literal(self.user)
            + "{{ m['content'] }}" + _jinja_literal(self.assistant)
            + "{% else %}" + _jinja_literal(self.answer_prefix) + "{{ m['content'] }}{{ eos_token }}{% endif %}"
            + "{% endfor %}"
        )


def _jinja_literal(text: str) -> str:
    return "{{ " + repr(text) + " }}" if text else ""


def register(t: Template) -> Template:
    return TEMPLATES.register(t.name)(t)


# Compact template for models trained on `shapes`: short prompts keep tiny models fast.
register(Template("edgevlm", system="", user="USER: ", assistant=" ASSISTANT:"))
# The same with the question first: image tokens sit at a fixed distance before the answer, whatever the
# question's length, so a small LM's rotary attention finds an asked-about cell at the same relative offsets.
register(Template("edgevlm-qfirst", system="", user="USER: ", assistant=" ASSISTANT:", image_last=True))
# Vicuna v1, used by MobileVLM, TinyLLaVA (vicuna_v1 / phi) and MoE-LLaVA.
register(Template(
    "vicuna_v1",
    system="A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions. ",
    user="USER: ",
    assistant=" ASSISTANT:",
))
# Bunny's default conversation template.
register(Template(
    "bunny",
    system="A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions. ",
    user="USER: ",
    assistant=" ASSISTANT:",
))
