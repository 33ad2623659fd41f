"""OTLP attribute keys, for both directions (the exporter writes them, the receiver reads them).

The names follow the mapping verified against real MLflow 3.18 and Phoenix 20.21
servers (and read in Langfuse's source): one attribute set that all three backends
understand. Grouped by what they carry; the receiver's precedence lists say which key
wins when a span has several.
"""

from __future__ import annotations

__all__ = [
    "CLIENT_REQUEST_ID",
    "CONTENT_TYPE_JSON",
    "CONTENT_TYPE_PROTOBUF",
    "DEPLOYMENT_ENVIRONMENT",
    "DEPLOYMENT_ENVIRONMENT_OLD",
    "EXCEPTION_EVENT",
    "EXCEPTION_MESSAGE",
    "EXCEPTION_STACKTRACE",
    "EXCEPTION_TYPE",
    "FLAG_HAS_IS_REMOTE",
    "FLAG_PARENT_IS_REMOTE",
    "GENAI_CONVERSATION_ID",
    "GENAI_INPUT_MESSAGES",
    "GENAI_OPERATION_NAME",
    "GENAI_OUTPUT_MESSAGES",
    "GENAI_PROVIDER_NAME",
    "GENAI_REQUEST_MODEL",
    "GENAI_RESPONSE_MODEL",
    "GENAI_SYSTEM",
    "GENAI_USAGE_INPUT_TOKENS",
    "GENAI_USAGE_OUTPUT_TOKENS",
    "INPUT_MIME_TYPE",
    "INPUT_VALUE",
    "INPUT_KEYS",
    "LANGFUSE_SESSION_ID",
    "LANGFUSE_TRACE_METADATA_PREFIX",
    "LANGFUSE_TRACE_NAME",
    "LANGFUSE_USER_ID",
    "LLM_MODEL_NAME",
    "LLM_PROVIDER",
    "LLM_TOKEN_COUNT_COMPLETION",
    "LLM_TOKEN_COUNT_PROMPT",
    "LLM_TOKEN_COUNT_TOTAL",
    "METADATA_JSON",
    "METADATA_PREFIX",
    "MIME_JSON",
    "MIME_TEXT",
    "MLFLOW_SPAN_INPUTS",
    "MLFLOW_SPAN_OUTPUTS",
    "MLFLOW_SPAN_TYPE",
    "MLFLOW_SESSION_MAX_LENGTH",
    "MLFLOW_TRACE_NAME_TAG",
    "MLFLOW_TRACE_TAG_PREFIX",
    "OPENINFERENCE_PROJECT_NAME",
    "OPENINFERENCE_SPAN_KIND",
    "OUTPUT_KEYS",
    "OUTPUT_MIME_TYPE",
    "OUTPUT_VALUE",
    "SCOPE_NAME",
    "SERVICE_INSTANCE_ID",
    "SERVICE_NAME",
    "SERVICE_VERSION",
    "SESSION_ID",
    "SESSION_KEYS",
    "SPAN_KIND_FROM_TYPE",
    "SPAN_TYPE_FROM_GENAI_OPERATION",
    "SPAN_TYPE_FROM_KIND",
    "SPAN_TYPE_KEYS",
    "STATUS_CODE_ERROR",
    "STATUS_CODE_OK",
    "STATUS_CODE_UNSET",
    "ST_PREFIX",
    "ST_RESOURCE_PREFIX",
    "SUPPORTED_SESSION_MAX_LENGTH",
    "TAG_TAGS",
    "TRACES_PATH",
    "USER_ID",
    "USER_KEYS",
]

# -- wire ------------------------------------------------------------------------------
TRACES_PATH = "/v1/traces"
CONTENT_TYPE_PROTOBUF = "application/x-protobuf"
CONTENT_TYPE_JSON = "application/json"
# Span.flags: bits 0-7 are the W3C trace flags; these two say whether the parent is remote.
FLAG_HAS_IS_REMOTE = 0x100
FLAG_PARENT_IS_REMOTE = 0x200
# Status.code
STATUS_CODE_UNSET = 0
STATUS_CODE_OK = 1
STATUS_CODE_ERROR = 2
# The instrumentation scope our spans are sent under.
SCOPE_NAME = "sessiontrace"

# -- who and which conversation (on EVERY span) ----------------------------------------
SESSION_ID = "session.id"  # OpenInference / Langfuse SDK / MLflow ingest
GENAI_CONVERSATION_ID = "gen_ai.conversation.id"  # OTel GenAI semconv; MLflow reads it too
LANGFUSE_SESSION_ID = "langfuse.session.id"
USER_ID = "user.id"  # OTel semconv (enduser.id is deprecated); MLflow, Phoenix, Langfuse
LANGFUSE_USER_ID = "langfuse.user.id"
# Receiver precedence: the first key present wins (then the first span that has one).
SESSION_KEYS = (LANGFUSE_SESSION_ID, SESSION_ID, GENAI_CONVERSATION_ID)
USER_KEYS = (LANGFUSE_USER_ID, USER_ID)
# MLflow rejects a whole OTLP batch (400) when session.id exceeds this.
MLFLOW_SESSION_MAX_LENGTH = 250
# The longest id every backend takes; the middleware's default max_length.
SUPPORTED_SESSION_MAX_LENGTH = 250

# -- inputs and outputs ----------------------------------------------------------------
INPUT_VALUE = "input.value"  # OpenInference; MLflow, Phoenix, Langfuse read it
INPUT_MIME_TYPE = "input.mime_type"
OUTPUT_VALUE = "output.value"
OUTPUT_MIME_TYPE = "output.mime_type"
MIME_JSON = "application/json"
MIME_TEXT = "text/plain"
MLFLOW_SPAN_INPUTS = "mlflow.spanInputs"  # JSON text; exact MLflow typing
MLFLOW_SPAN_OUTPUTS = "mlflow.spanOutputs"
GENAI_INPUT_MESSAGES = "gen_ai.input.messages"
GENAI_OUTPUT_MESSAGES = "gen_ai.output.messages"
INPUT_KEYS = (MLFLOW_SPAN_INPUTS, INPUT_VALUE, GENAI_INPUT_MESSAGES)
OUTPUT_KEYS = (MLFLOW_SPAN_OUTPUTS, OUTPUT_VALUE, GENAI_OUTPUT_MESSAGES)

# -- span type -------------------------------------------------------------------------
OPENINFERENCE_SPAN_KIND = "openinference.span.kind"
MLFLOW_SPAN_TYPE = "mlflow.spanType"
GENAI_OPERATION_NAME = "gen_ai.operation.name"
SPAN_TYPE_KEYS = (MLFLOW_SPAN_TYPE, OPENINFERENCE_SPAN_KIND, GENAI_OPERATION_NAME)
# Our (MLflow's) span types -> OpenInference span kinds. Anything else -> CHAIN.
SPAN_KIND_FROM_TYPE = {
    "LLM": "LLM",
    "CHAT_MODEL": "LLM",
    "CHAIN": "CHAIN",
    "AGENT": "AGENT",
    "TOOL": "TOOL",
    "RETRIEVER": "RETRIEVER",
    "EMBEDDING": "EMBEDDING",
    "RERANKER": "RERANKER",
    "PARSER": "CHAIN",
    "MEMORY": "CHAIN",
    "UNKNOWN": "UNKNOWN",
}
# OpenInference span kind -> our span type (used when mlflow.spanType is absent).
SPAN_TYPE_FROM_KIND = {
    "LLM": "LLM",
    "CHAIN": "CHAIN",
    "AGENT": "AGENT",
    "TOOL": "TOOL",
    "RETRIEVER": "RETRIEVER",
    "EMBEDDING": "EMBEDDING",
    "RERANKER": "RERANKER",
    "GUARDRAIL": "CHAIN",
    "EVALUATOR": "CHAIN",
    "PROMPT": "CHAIN",
    "UNKNOWN": "UNKNOWN",
}
# gen_ai.operation.name -> our span type.
SPAN_TYPE_FROM_GENAI_OPERATION = {
    "chat": "CHAT_MODEL",
    "text_completion": "LLM",
    "generate_content": "LLM",
    "embeddings": "EMBEDDING",
    "execute_tool": "TOOL",
    "invoke_agent": "AGENT",
    "create_agent": "AGENT",
}

# -- LLM calls -------------------------------------------------------------------------
GENAI_REQUEST_MODEL = "gen_ai.request.model"
GENAI_RESPONSE_MODEL = "gen_ai.response.model"
GENAI_SYSTEM = "gen_ai.system"  # deprecated in favour of gen_ai.provider.name; still read
GENAI_PROVIDER_NAME = "gen_ai.provider.name"
GENAI_USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GENAI_USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
LLM_MODEL_NAME = "llm.model_name"  # OpenInference
LLM_PROVIDER = "llm.provider"
LLM_TOKEN_COUNT_PROMPT = "llm.token_count.prompt"
LLM_TOKEN_COUNT_COMPLETION = "llm.token_count.completion"
LLM_TOKEN_COUNT_TOTAL = "llm.token_count.total"

# -- trace name, tags, metadata (on the ROOT span) ----------------------------------------
MLFLOW_TRACE_TAG_PREFIX = "mlflow.traceTag."  # mlflow.traceTag.<k> = v -> MLflow tag k
MLFLOW_TRACE_NAME_TAG = "mlflow.traceTag.mlflow.traceName"  # MLflow's trace name
LANGFUSE_TRACE_NAME = "langfuse.trace.name"
LANGFUSE_TRACE_METADATA_PREFIX = "langfuse.trace.metadata."
TAG_TAGS = "tag.tags"  # Phoenix / Langfuse: a list of strings, here "k:v"
METADATA_JSON = "metadata"  # Phoenix: a JSON object as text
ST_PREFIX = "sessiontrace."
METADATA_PREFIX = "sessiontrace.metadata."  # lossless metadata, read back by our receiver
CLIENT_REQUEST_ID = "sessiontrace.client_request_id"

# -- errors (span events) ----------------------------------------------------------------
EXCEPTION_EVENT = "exception"
EXCEPTION_TYPE = "exception.type"
EXCEPTION_MESSAGE = "exception.message"
EXCEPTION_STACKTRACE = "exception.stacktrace"

# -- resource ----------------------------------------------------------------------------
SERVICE_NAME = "service.name"
SERVICE_VERSION = "service.version"
SERVICE_INSTANCE_ID = "service.instance.id"
DEPLOYMENT_ENVIRONMENT = "deployment.environment.name"
DEPLOYMENT_ENVIRONMENT_OLD = "deployment.environment"  # pre-1.27 semconv; read only
OPENINFERENCE_PROJECT_NAME = "openinference.project.name"  # Phoenix project routing
ST_RESOURCE_PREFIX = "sessiontrace.resource."  # our other process-wide facts
