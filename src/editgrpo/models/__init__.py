"""Policy and processor loading, and tiny offline Qwen2.5-VL models for tests and demos."""
