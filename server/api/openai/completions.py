"""``/v1/completions``: a raw prompt (text or token ids) through the generation pipeline,
with echo and prompt scoring, as a whole response or ``text_completion`` frames.
"""

import time
from collections.abc import Iterable
from dataclasses import replace

from starlette.requests import Request

from server.api.errors import BadRequestError
from server.api.generation import (
    GenerationItem,
    GenerationService,
    PromptScores,
    RequestContext,
    ResponseRecord,
    TextDelta,
    collect_all,
    until_disconnected,
)
from server.api.openai.chat_request import sampling_params
from server.api.openai.logprobs import PieceOf, completion_logprobs
from server.api.openai.protocol import (
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
    UsageInfo,
)
from server.api.openai.wire import (
    CONTENT_MARKER,
    ContentTemplate,
    OpenAIFormat,
    include_usage,
    usage_info,
)
from server.api.streaming import Frame, SseResponse, open_stream
from server.engine.types import TokenLogprob
from server.runtime.services import Services


class CompletionServing:
    """POST /v1/completions."""

    def __init__(self, services: Services) -> None:
        self.services = services

    async def completions(
        self,
        request: CompletionRequest,
        ctx: RequestContext,
        generation: GenerationService,
        http_request: Request,
    ) -> CompletionResponse | SseResponse:
        generation.check_choices(request.n)
        generation.set_priority(ctx, request.priority)
        ctx.cache_salt = request.cache_salt or ""
        generation.pick_adapter(ctx, request.model, request.user)
        if request.suffix:
            raise BadRequestError("suffix is not supported.", param="suffix")
        if request.best_of not in (None, 1):
            raise BadRequestError("best_of > 1 is not supported.", param="best_of")
        if request.max_tokens == 0 and not request.echo:
            raise BadRequestError(
                "max_tokens 0 generates nothing: it is only allowed with echo: true (to score "
                "the prompt with logprobs).",
                param="max_tokens",
            )
        prompt_text, prompt = _completion_prompt(generation, request.prompt)
        model = ctx.adapter or self.services.model_id
        scoring = request.echo and request.logprobs is not None
        if request.max_tokens == 0 and not scoring:  # echo only: nothing to compute
            return _echo_only(f"cmpl-{ctx.request_id}", model, prompt_text, len(prompt), request.n)
        max_tokens = generation.resolve_max_tokens(request.max_tokens, len(prompt))
        params = replace(
            sampling_params(request, max_tokens),
            logprobs=request.logprobs,
            prompt_logprobs=request.logprobs if scoring else None,
        )
        ctx.record = ResponseRecord(
            f"cmpl-{ctx.request_id}", "completions", prompt_text, prompt=prompt_text
        )
        items = generation.stream(ctx, prompt, params, input_text=prompt_text, n=request.n)
        echo = prompt_text if request.echo else ""
        piece_of = generation.token_piece if request.logprobs is not None else None
        if request.stream:
            fmt = CompletionChunkFormat(
                f"cmpl-{ctx.request_id}",
                model,
                include_usage(request),
                echo=echo,
                prompt=prompt,
                piece_of=piece_of,
                n=request.n,
            )
            return await open_stream(http_request, ctx, items, fmt)
        whole = await until_disconnected(http_request, collect_all(items))
        choices = []
        for index, (text, reason) in enumerate(
            zip(whole.texts, whole.done.finish_reasons, strict=True)
        ):
            logprobs = None
            if piece_of is not None:
                entries: list[TokenLogprob | tuple[int, None]] = []
                if scoring:  # the prompt is scored once; every choice echoes it
                    entries += [(prompt[0], None), *whole.prompt_logprobs]
                entries += whole.logprobs[index]
                logprobs = completion_logprobs(entries, piece_of)
            choices.append(
                CompletionChoice(
                    index=index, text=echo + text, finish_reason=reason, logprobs=logprobs
                )
            )
        return CompletionResponse(
            id=f"cmpl-{ctx.request_id}", model=model, choices=choices, usage=usage_info(whole.done)
        )


def _completion_prompt(
    generation: GenerationService, prompt: str | list[str] | list[int]
) -> tuple[str, list[int]]:
    if isinstance(prompt, str):
        return prompt, generation.tokenize(prompt)
    if not prompt:
        raise BadRequestError("prompt must not be empty", param="prompt")
    if all(isinstance(p, int) for p in prompt):
        tokens = [int(p) for p in prompt]
        return generation.detokenize(tokens, param="prompt"), tokens
    if len(prompt) != 1:
        raise BadRequestError(
            "a list of several prompts is not supported: send one request per prompt.",
            param="prompt",
        )
    return str(prompt[0]), generation.tokenize(str(prompt[0]))


def _echo_only(
    chunk_id: str, model: str, prompt_text: str, n_prompt: int, n: int
) -> CompletionResponse:
    """``echo`` with ``max_tokens: 0`` and no logprobs: the prompt back, nothing run."""
    return CompletionResponse(
        id=chunk_id,
        model=model,
        choices=[
            CompletionChoice(index=index, text=prompt_text, finish_reason="length")
            for index in range(n)
        ],
        usage=UsageInfo(prompt_tokens=n_prompt, completion_tokens=0, total_tokens=n_prompt),
    )


class CompletionChunkFormat(OpenAIFormat):
    """``text_completion`` frames: the echo (with prompt logprobs), text deltas, finish, usage.

    With ``n`` choices every chunk carries its choice's ``index``; each choice echoes the
    prompt (scored once) before its first text.
    """

    def __init__(
        self,
        chunk_id: str,
        model: str,
        include_usage: bool,
        *,
        echo: str = "",
        prompt: list[int] | None = None,
        piece_of: PieceOf | None = None,
        n: int = 1,
    ) -> None:
        self.chunk_id, self.model, self.include_usage = chunk_id, model, include_usage
        self.created = int(time.time())
        self.n = n
        self._echo = echo
        self._prompt = prompt or []
        self._prompt_scores: list[TokenLogprob] = []
        self._piece_of = piece_of
        self._offsets = [0] * n  # characters sent so far per choice (next token's text_offset)
        self._text: dict[int, ContentTemplate] = {}

    def _chunk(
        self,
        text: str,
        finish: str | None,
        usage: UsageInfo | None = None,
        logprobs: CompletionLogprobs | None = None,
        index: int = 0,
    ) -> Frame:
        choices = (
            []
            if usage
            else [CompletionChoice(index=index, text=text, finish_reason=finish, logprobs=logprobs)]
        )
        body = CompletionResponse(
            id=self.chunk_id, created=self.created, model=self.model, choices=choices, usage=usage
        )
        return {"data": body.model_dump_json()}

    def _plain(self, text: str, index: int) -> Frame:
        template = self._text.get(index)
        if template is None:
            marked = self._chunk(CONTENT_MARKER, None, index=index)
            template = self._text[index] = ContentTemplate(marked["data"])
        return {"data": template.render(text)}

    def _logprobs(
        self, entries: list[TokenLogprob | tuple[int, None]], index: int
    ) -> CompletionLogprobs | None:
        if self._piece_of is None:
            return None
        return completion_logprobs(entries, self._piece_of, text_offset=self._offsets[index])

    def frames(self, event: GenerationItem) -> Iterable[Frame]:
        if isinstance(event, PromptScores):
            self._prompt_scores.extend(event.entries)
            return
        if self._echo:
            scored: list[TokenLogprob | tuple[int, None]] = []
            if self._prompt_scores:
                scored = [(self._prompt[0], None), *self._prompt_scores]
            for index in range(self.n):
                logprobs = self._logprobs(scored, index)
                yield self._chunk(self._echo, None, logprobs=logprobs, index=index)
                self._offsets[index] += len(self._echo)
            self._echo = ""
        if isinstance(event, TextDelta):
            index = event.index
            if self._piece_of is None:
                yield self._plain(event.text, index)
                return
            logprobs = self._logprobs(list(event.logprobs), index)
            yield self._chunk(event.text, None, logprobs=logprobs, index=index)
            self._offsets[index] += len(event.text)
            return
        for index, reason in enumerate(event.finish_reasons):
            yield self._chunk("", reason, index=index)
        if self.include_usage:
            yield self._chunk("", None, usage_info(event))
