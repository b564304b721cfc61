"""SMTP: pure reply framing and EHLO parsing (reply.py), the sans-IO dialogue (dialogue.py) and its
asyncio driver (session.py)."""
