#!/usr/bin/env bash
# Fetch the built-in SmolLM2-135M into headcode's cache (kept for existing callers; the
# table of built-in models lives in fetch-models.sh). Idempotent.
exec "$(dirname "$0")/fetch-models.sh" smollm2-135m
