"""SMTP: pure reply framing and EHLO parsing (reply.py) and the asyncio probe dialogue (session.py)."""
