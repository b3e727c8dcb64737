"""What a person looks at: matplotlib figures (`plot`) and the self-contained HTML report (`html`)."""

from bagnet_keras.report.html import write_report

__all__ = ["write_report"]
