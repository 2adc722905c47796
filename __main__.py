"""octollm-infra: validate the stack's config, then compose the components it describes."""

from components import stack

stack.deploy(stack.load())
