"""What "Label" shows to someone in no project: nothing to label, and who can change that."""
import streamlit as st

st.title("Label")
st.info("You are not in any project yet; an admin can add you.")
