"""The core library's click commands, one module each; ``augmentor.cli`` loads them lazily."""
