def hello() -> str:
    return "Hello from eap!"
