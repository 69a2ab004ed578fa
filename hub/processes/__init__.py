"""Process management (issue 14): what follows messages after delivery — documents to 办结, approvals under
supervision, emergencies until every recipient has acknowledged, meetings. Off the message path; see engine.py."""
